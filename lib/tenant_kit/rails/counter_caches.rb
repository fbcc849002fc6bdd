# frozen_string_literal: true

module TenantKit
  module Rails
    # Counter caches (`belongs_to :board, counter_cache: true`) after a
    # restore or purge: tenant_kit writes rows behind ActiveRecord's back,
    # so a parent's `cards_count` is the archived value (or unchanged, for a
    # parent that is not the tenant's) while its children changed. This
    # recounts, with one UPDATE per counter, the parents a restore can have
    # affected:
    # - parents with the tenant column: the tenant's rows;
    # - other parents (shared between tenants, `labels`): those the tenant's
    #   children pointed at before the restore or point at after it;
    # - a counter whose parent and child both lack the tenant column: every
    #   row (tenant_kit cannot tell whose they are).
    # Polymorphic counter caches are left alone (the parent table depends
    # on each row). The count is of every child row with the foreign key,
    # as Rails' own increments keep it.
    class CounterCaches
      Counter = Struct.new(:child, :foreign_key, :parent, :primary_key, :column, keyword_init: true) do
        def name
          "#{parent.table_name}.#{column}"
        end
      end

      # Every counter cache of `models`, from their belongs_to reflections.
      def self.counters(models)
        models.flat_map do |model|
          model.reflect_on_all_associations(:belongs_to).filter_map do |reflection|
            next unless reflection.options[:counter_cache] && !reflection.polymorphic?

            parent = App.safe_klass(reflection) or next
            Counter.new(child: model, foreign_key: reflection.foreign_key.to_s, parent: parent,
                        primary_key: reflection.association_primary_key.to_s,
                        column: reflection.counter_cache_column.to_s)
          end
        end.uniq { |c| [c.child.table_name, c.foreign_key, c.parent.table_name, c.column] }
      end

      def initialize(models, tenant_column:, tenant_id:)
        @counters = self.class.counters(models).select { |c| usable?(c) }
        @tenant_column = tenant_column.to_s
        @tenant_id = tenant_id
        @before = {}
      end

      # Call before the restore: the shared parents the tenant's children
      # point at now (a purge takes those children away).
      def remember
        @counters.each { |c| @before[c] = shared_parent_ids(c) if shared?(c) }
        self
      end

      # Recount; returns { "labels.cards_count" => rows updated }.
      def reset
        @counters.to_h do |c|
          [c.name, parents_to_reset(c).update_all("#{quote(c.column)} = (#{count_sql(c)})")]
        end
      end

      private

      def usable?(counter)
        [counter.child, counter.parent].all? { |m| m.table_exists? } &&
          counter.parent.column_names.include?(counter.column) &&
          counter.child.column_names.include?(counter.foreign_key)
      end

      def owned?(model)
        model.column_names.include?(@tenant_column)
      end

      def shared?(counter)
        !owned?(counter.parent) && owned?(counter.child)
      end

      def shared_parent_ids(counter)
        counter.child.unscoped.where(@tenant_column => @tenant_id).where.not(counter.foreign_key => nil)
               .distinct.pluck(counter.foreign_key)
      end

      def parents_to_reset(counter)
        parents = counter.parent.unscoped
        return parents.where(@tenant_column => @tenant_id) if owned?(counter.parent)
        return parents unless shared?(counter)

        parents.where(counter.primary_key => (@before.fetch(counter, []) | shared_parent_ids(counter)))
      end

      def count_sql(counter)
        child = quote_table(counter.child.table_name)
        parent = quote_table(counter.parent.table_name)
        "SELECT COUNT(*) FROM #{child} WHERE #{child}.#{quote(counter.foreign_key)} = " \
          "#{parent}.#{quote(counter.primary_key)}"
      end

      def quote(column)
        ::ActiveRecord::Base.connection.quote_column_name(column)
      end

      def quote_table(table)
        ::ActiveRecord::Base.connection.quote_table_name(table)
      end
    end
  end
end
